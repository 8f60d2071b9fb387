set terminal pngcairo size 800,500 font 'sans,10'
set output 'gap_vs_momentum.png'
set datafile separator ','
set title 'Accuracy lost by using running averages instead of population statistics' noenhanced
set xlabel 'BN momentum (weight of each new batch)'
set ylabel 'population accuracy - running accuracy'
set grid
set key below noenhanced
set format x '%g'
set logscale x 10
plot 'test_time.csv' every ::1 using 2:(strcol(1) eq '300 steps' ? column(9) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'after 300 steps', \
     'test_time.csv' every ::1 using 2:(strcol(1) eq '3000 steps' ? column(9) : 1/0) with linespoints pt 7 ps 0.8 lw 2 title 'after 3000 steps'
